# Unit tests of the input shape checks: malformed input is denied, never guessed.
package accord.exchange_test

import data.accord.exchange

messages(d) := {r.message | some r in d.deny; r.code == "invalid_input"}

test_empty_input_denied if {
	d := exchange.decision with input as {}
	not d.allow
	d.level == null
	"input.scheme.levels must be a non-empty array of unique strings" in messages(d)
	"input.now.unix must be a number" in messages(d)
	"input.caller.department must be a non-empty string" in messages(d)
	"input.usage.day must be a number" in messages(d)
}

test_non_object_input_denied if {
	d := exchange.decision with input as [1, 2]
	not d.allow
}

test_empty_strings_denied if {
	d := decide([
		{"op": "replace", "path": "/caller/department", "value": ""},
		{"op": "replace", "path": "/request/purpose", "value": ""},
	])
	"input.caller.department must be a non-empty string" in messages(d)
	"input.request.purpose must be a non-empty string" in messages(d)
}

test_wrong_types_denied if {
	d := decide([
		{"op": "replace", "path": "/now/unix", "value": "1780315200"},
		{"op": "replace", "path": "/caller/caveats", "value": "uk-eyes"},
		{"op": "replace", "path": "/request/fields", "value": ["name"]},
		{"op": "replace", "path": "/request/query", "value": {"kind": "everything", "cohort_size": "9"}},
		{"op": "replace", "path": "/agreement/purposes", "value": "benefit_eligibility"},
		{"op": "replace", "path": "/agreement/not_after", "value": null},
		{"op": "replace", "path": "/agreement/consumer", "value": 7},
		{"op": "replace", "path": "/agreement/datasets/person@1/fields/name", "value": 3},
	])
	not d.allow
	messages(d) == {
		"input.now.unix must be a number",
		"input.caller.caveats must be an array of strings",
		"input.request.fields must be a non-empty object",
		"input.request.query.kind must be record, verify or aggregate",
		"input.request.query.cohort_size must be a number",
		"input.agreement.purposes must be an array of strings",
		"input.agreement.not_after must be a number",
		"input.agreement.consumer must be a non-empty string",
		"input.agreement.datasets.person@1.fields.name has a malformed operation",
	}
}

test_malformed_label_denied if {
	d := decide([{"op": "add", "path": "/request/fields/name", "value": {"level": 2, "caveats": "x"}}])
	messages(d) == {"input.request.fields.name has a malformed label"}
}

test_duplicate_levels_denied if {
	d := decide([{"op": "replace", "path": "/scheme/levels", "value": ["public", "public"]}])
	"input.scheme.levels must be a non-empty array of unique strings" in messages(d)
	d.level == null
}

test_unknown_status_text if {
	d := decide([{"op": "replace", "path": "/agreement/status", "value": 5}])
	{"code": "agreement_inactive", "message": "agreement is in an unknown state"} in d.deny
}

test_verify_query_uses_agreement_operation if {
	d := decide([{"op": "replace", "path": "/request/query", "value": {"kind": "verify"}}])
	d.allow
	d.obligations.birth_date.operation == "generalise"
}

test_unicode_names if {
	d := decide([
		{"op": "add", "path": "/agreement/datasets/person@1/fields/姓名", "value": {"operation": "mask", "keep_prefix": 1}},
		{"op": "add", "path": "/request/fields/姓名", "value": {"level": "public"}},
	])
	d.allow
	d.obligations["姓名"] == {"operation": "mask", "keep_prefix": 1}
}

test_malformed_quotas_denied if {
	d := decide([{"op": "replace", "path": "/agreement/quotas", "value": {"per_minute": "10"}}])
	messages(d) == {"input.agreement.quotas.per_minute must be a number"}
	e := decide([{"op": "replace", "path": "/agreement/quotas", "value": 5}])
	messages(e) == {"input.agreement.quotas must be an object"}
}

test_label_keys_are_optional_but_typed_when_present if {
	messages(decide([{"op": "add", "path": "/request/fields/name", "value": {}}])) == set()
	messages(decide([{"op": "add", "path": "/request/fields/name", "value": {"level": null}}])) == {"input.request.fields.name has a malformed label"}
	messages(decide([{"op": "add", "path": "/request/fields/name", "value": {"personal": 1}}])) == {"input.request.fields.name has a malformed label"}
	messages(decide([{"op": "add", "path": "/request/fields/name", "value": {"level": "public", "caveats": [1]}}])) == {"input.request.fields.name has a malformed label"}
}

test_null_quotas_denied if {
	d := decide([{"op": "replace", "path": "/agreement/quotas", "value": null}])
	messages(d) == {"input.agreement.quotas must be an object"}
}
