# Unit tests of the exchange decision: one test per deny reason, plus the
# allow path, obligations and the "report every reason" rule.
package accord.exchange_test

import data.accord.exchange

base := {
	"schema_version": 1,
	"now": {"rfc3339": "2026-06-01T12:00:00Z", "unix": 1780315200},
	"scheme": {"levels": ["public", "internal", "confidential", "restricted"]},
	"caller": {"department": "dwp", "clearance": "confidential", "caveats": ["uk-eyes"]},
	"agreement": {
		"id": "agr-1", "version": 1, "status": "active",
		"provider": "hmrc", "consumer": "dwp",
		"not_before": 1767225600, "not_after": 1798761599,
		"ceiling": "confidential",
		"purposes": ["benefit_eligibility"], "legal_basis": "",
		"datasets": {"person@1": {
			"fields": {
				"name": "pass",
				"birth_date": {"operation": "generalise", "to": "year"},
				"health": "pass",
				"secret": "pass",
				"tagged": "pass",
			},
			"aggregate": {"min_k": 10},
		}},
		"quotas": {"per_minute": 10, "per_day": 1000},
	},
	"request": {
		"dataset": "person@1", "purpose": "benefit_eligibility",
		"fields": {
			"name": {"level": "internal", "caveats": [], "personal": "identifier"},
			"birth_date": {"level": "confidential", "personal": "quasi_identifier"},
		},
		"query": {"kind": "record"},
	},
	"usage": {"minute": 0, "day": 5},
}

decide(patch) := d if {
	d := exchange.decision with input as json.patch(base, patch)
}

codes(d) := {r.code | some r in d.deny}

only(d, code) if {
	not d.allow
	codes(d) == {code}
	d.obligations == {}
}

test_allow_with_obligations if {
	d := decide([])
	d.allow
	d.deny == []
	d.level == "confidential"
	d.obligations == {
		"name": {"operation": "pass"},
		"birth_date": {"operation": "generalise", "to": "year"},
	}
}

test_no_agreement if only(decide([{"op": "remove", "path": "/agreement"}]), "no_agreement")

test_null_agreement if only(decide([{"op": "replace", "path": "/agreement", "value": null}]), "no_agreement")

test_suspended if {
	d := decide([{"op": "replace", "path": "/agreement/status", "value": "suspended"}])
	only(d, "agreement_inactive")
	d.deny[0].message == "agreement is suspended"
}

test_not_yet_valid if only(decide([{"op": "replace", "path": "/now/unix", "value": 1767225599}]), "agreement_inactive")

test_valid_at_not_before if decide([{"op": "replace", "path": "/now/unix", "value": 1767225600}]).allow

test_valid_at_not_after if decide([{"op": "replace", "path": "/now/unix", "value": 1798761599}]).allow

test_expired if only(decide([{"op": "replace", "path": "/now/unix", "value": 1798761600}]), "agreement_inactive")

test_wrong_consumer if only(decide([{"op": "replace", "path": "/caller/department", "value": "hmrc"}]), "wrong_consumer")

test_dataset_not_covered if only(decide([{"op": "replace", "path": "/request/dataset", "value": "car@1"}]), "dataset_not_covered")

test_field_not_permitted if {
	d := decide([{"op": "add", "path": "/request/fields/nino", "value": {"level": "internal"}}])
	only(d, "field_not_permitted")
	d.deny[0].message == "field nino is not permitted by the agreement"
}

test_purpose_not_permitted if only(decide([{"op": "replace", "path": "/request/purpose", "value": "marketing"}]), "purpose_not_permitted")

test_ceiling if {
	d := decide([{"op": "add", "path": "/request/fields/secret", "value": {"level": "restricted"}}])
	codes(d) == {"classification_exceeds_ceiling", "clearance_insufficient"}
	d.level == "restricted"
}

test_ceiling_only if {
	d := decide([
		{"op": "replace", "path": "/caller/clearance", "value": "restricted"},
		{"op": "add", "path": "/request/fields/secret", "value": {"level": "restricted"}},
	])
	only(d, "classification_exceeds_ceiling")
}

test_clearance_only if only(decide([{"op": "replace", "path": "/caller/clearance", "value": "internal"}]), "clearance_insufficient")

test_unknown_clearance_denies if only(decide([{"op": "replace", "path": "/caller/clearance", "value": "cosmic"}]), "clearance_insufficient")

test_unlabelled_field_counts_as_highest if {
	d := decide([{"op": "add", "path": "/request/fields/secret", "value": null}])
	codes(d) == {"classification_exceeds_ceiling", "clearance_insufficient"}
	d.level == "restricted"
}

test_unknown_level_outranks_all if {
	d := decide([
		{"op": "replace", "path": "/caller/clearance", "value": "restricted"},
		{"op": "replace", "path": "/agreement/ceiling", "value": "restricted"},
		{"op": "add", "path": "/request/fields/secret", "value": {"level": "ultra"}},
	])
	codes(d) == {"classification_exceeds_ceiling", "clearance_insufficient"}
	d.level == "restricted"
}

test_caveat_missing if {
	d := decide([{"op": "add", "path": "/request/fields/tagged", "value": {"level": "public", "caveats": ["uk-eyes", "b", "a"]}}])
	only(d, "caveat_missing")
	d.deny[0].message == "field tagged needs caveats the caller lacks: a, b"
}

test_caveat_held if decide([{"op": "add", "path": "/request/fields/tagged", "value": {"level": "public", "caveats": ["uk-eyes"]}}]).allow

test_legal_basis_required if {
	d := decide([{"op": "add", "path": "/request/fields/health", "value": {"level": "internal", "personal": "special"}}])
	only(d, "legal_basis_required")
}

test_legal_basis_present if {
	d := decide([
		{"op": "replace", "path": "/agreement/legal_basis", "value": "UK GDPR Art. 9(2)(b)"},
		{"op": "add", "path": "/request/fields/health", "value": {"level": "internal", "personal": "sensitive"}},
	])
	d.allow
}

test_quota_minute if only(decide([{"op": "replace", "path": "/usage/minute", "value": 10}]), "quota_exceeded")

test_quota_day_float if only(decide([{"op": "replace", "path": "/usage/day", "value": 1000.0}]), "quota_exceeded")

test_quota_just_below if decide([{"op": "replace", "path": "/usage/minute", "value": 9}]).allow

test_no_quota_no_limit if decide([
	{"op": "remove", "path": "/agreement/quotas"},
	{"op": "replace", "path": "/usage/day", "value": 99999999},
]).allow

test_aggregate_allowed if {
	d := decide([{"op": "replace", "path": "/request/query", "value": {"kind": "aggregate", "cohort_size": 10}}])
	d.allow
	d.obligations.name == {"operation": "aggregate", "min_k": 10}

	# A generalised field is grouped by its generalised value, never the raw one.
	d.obligations.birth_date == {"operation": "generalise", "to": "year", "min_k": 10}
}

# The agreement of base, with one field per release operation.
every_operation := [
	{"op": "add", "path": "/agreement/datasets/person@1/fields/nino", "value": {"operation": "mask", "keep_suffix": 2}},
	{"op": "add", "path": "/agreement/datasets/person@1/fields/dob", "value": {"operation": "verify_only"}},
	{"op": "add", "path": "/agreement/datasets/person@1/fields/ref", "value": "pseudonymise"},
	{"op": "add", "path": "/agreement/datasets/person@1/fields/gone", "value": "drop"},
	{"op": "add", "path": "/agreement/datasets/person@1/fields/city", "value": "aggregate"},
	{"op": "add", "path": "/agreement/datasets/person@1/fields/amount", "value": "aggregate"},
]

aggregate_of(group_by, sums) := decide(array.concat(every_operation, [
	{"op": "replace", "path": "/request/fields", "value": {name: {"level": "internal"} | some name in array.concat(group_by, sums)}},
	{"op": "replace", "path": "/request/query", "value": {"kind": "aggregate", "group_by": group_by, "sums": sums}},
]))

test_aggregate_refuses_grouping_by_a_field_released_otherwise if {
	some name, op in {"nino": "mask", "dob": "verify_only", "ref": "pseudonymise", "gone": "drop"}
	d := aggregate_of([name], [])
	only(d, "aggregate_not_allowed")
	d.deny == [{
		"code": "aggregate_not_allowed",
		"message": concat("", ["field ", name, " cannot be grouped by: the agreement releases it as ", op]),
	}]
}

test_aggregate_refuses_summing_a_field_not_aggregate_or_pass if {
	some name, op in {"birth_date": "generalise", "nino": "mask", "dob": "verify_only", "ref": "pseudonymise"}
	d := aggregate_of(["city"], [name])
	only(d, "aggregate_not_allowed")
	d.deny == [{
		"code": "aggregate_not_allowed",
		"message": concat("", ["field ", name, " cannot be summed: the agreement releases it as ", op]),
	}]
}

test_aggregate_names_every_field_it_refuses if {
	d := aggregate_of(["nino", "city", "birth_date"], ["dob", "amount"])
	{r.message | some r in d.deny} == {
		"field nino cannot be grouped by: the agreement releases it as mask",
		"field dob cannot be summed: the agreement releases it as verify_only",
	}
}

test_aggregate_groups_and_sums_what_the_agreement_allows if {
	d := aggregate_of(["city", "name", "birth_date"], ["amount", "name"])
	d.allow
	d.obligations == {
		"city": {"operation": "aggregate", "min_k": 10},
		"name": {"operation": "aggregate", "min_k": 10},
		"birth_date": {"operation": "generalise", "to": "year", "min_k": 10},
		"amount": {"operation": "aggregate", "min_k": 10},
	}
}

test_aggregate_without_a_spec_judges_every_field_as_a_group_by if {
	d := decide(array.concat(every_operation, [
		{"op": "add", "path": "/request/fields/dob", "value": {"level": "internal"}},
		{"op": "replace", "path": "/request/query", "value": {"kind": "aggregate"}},
	]))
	d.deny == [{"code": "aggregate_not_allowed", "message": "field dob cannot be aggregated: the agreement releases it as verify_only"}]
}

test_aggregate_spec_must_name_requested_fields if {
	d := decide([{"op": "replace", "path": "/request/query", "value": {"kind": "aggregate", "group_by": ["name", "nino"], "sums": "name"}}])
	only(d, "invalid_input")
	{r.message | some r in d.deny} == {
		"input.request.query.group_by must name only fields in request.fields",
		"input.request.query.sums must be an array of strings",
	}
}

test_verify_only_field_refused_to_a_record_query if {
	d := decide(array.concat(every_operation, [{"op": "add", "path": "/request/fields/dob", "value": {"level": "internal"}}]))
	only(d, "verify_only")
	d.deny == [{"code": "verify_only", "message": "field dob can only be asked about with a verify query"}]
}

test_verify_only_field_in_a_verify_query if {
	d := decide(array.concat(every_operation, [
		{"op": "replace", "path": "/request/fields", "value": {"dob": {"level": "internal"}}},
		{"op": "replace", "path": "/request/query", "value": {"kind": "verify"}},
	]))
	d.allow
	d.obligations == {"dob": {"operation": "verify_only"}}
}

test_expired_status_and_window_is_one_reason if {
	d := decide([
		{"op": "replace", "path": "/agreement/status", "value": "expired"},
		{"op": "replace", "path": "/now/unix", "value": 1798761600},
	])
	d.deny == [{"code": "agreement_inactive", "message": "agreement is expired"}]
}

test_expired_window_is_one_reason if {
	d := decide([{"op": "replace", "path": "/now/unix", "value": 1798761600}])
	d.deny == [{"code": "agreement_inactive", "message": "agreement has expired"}]
}

test_not_yet_valid_is_one_reason if {
	d := decide([{"op": "replace", "path": "/now/unix", "value": 1767225599}])
	d.deny == [{"code": "agreement_inactive", "message": "agreement is not yet valid"}]
}

test_inverted_window_is_one_reason if {
	d := decide([
		{"op": "replace", "path": "/agreement/not_before", "value": 1798761599},
		{"op": "replace", "path": "/agreement/not_after", "value": 1767225600},
	])
	d.deny == [{"code": "agreement_inactive", "message": "agreement is not yet valid"}]
}

test_aggregate_below_k if only(decide([{"op": "replace", "path": "/request/query", "value": {"kind": "aggregate", "cohort_size": 9}}]), "aggregate_below_k")

test_aggregate_not_permitted if only(
	decide([
		{"op": "remove", "path": "/agreement/datasets/person@1/aggregate"},
		{"op": "replace", "path": "/request/query", "value": {"kind": "aggregate"}},
	]),
	"aggregate_not_permitted",
)

test_aggregate_only_field_refused_to_a_record_query if {
	d := decide([
		{"op": "replace", "path": "/agreement/datasets/person@1/fields/name", "value": {"operation": "aggregate"}},
	])
	only(d, "aggregate_only")
	d.deny[0].message == "field name is released only in aggregates"
}

test_aggregate_only_field_refused_to_a_verify_query if only(
	decide([
		{"op": "replace", "path": "/agreement/datasets/person@1/fields/name", "value": "aggregate"},
		{"op": "replace", "path": "/request/query", "value": {"kind": "verify"}},
	]),
	"aggregate_only",
)

test_aggregate_only_field_in_an_aggregate if decide([
	{"op": "replace", "path": "/agreement/datasets/person@1/fields/name", "value": {"operation": "aggregate"}},
	{"op": "replace", "path": "/request/query", "value": {"kind": "aggregate", "cohort_size": 10}},
]).allow

test_unpermitted_field_gets_only_its_own_reason if {
	# Unlabelled, caveated and special: judged by nothing but the agreement's list.
	d := decide([{"op": "add", "path": "/request/fields/nino", "value": {"caveats": ["x"], "personal": "special"}}])
	only(d, "field_not_permitted")
	d.level == "restricted" # the audit still records it at the highest level
}

test_uncovered_dataset_gets_only_its_own_reason if only(
	decide([
		{"op": "replace", "path": "/request/dataset", "value": "car@1"},
		{"op": "add", "path": "/request/fields/secret", "value": {"level": "restricted", "caveats": ["x"]}},
	]),
	"dataset_not_covered",
)

test_every_reason_reported if {
	d := decide([
		{"op": "replace", "path": "/agreement/status", "value": "revoked"},
		{"op": "replace", "path": "/caller/department", "value": "hmrc"},
		{"op": "replace", "path": "/request/purpose", "value": "marketing"},
		{"op": "replace", "path": "/usage/minute", "value": 11},
	])
	codes(d) == {"agreement_inactive", "wrong_consumer", "purpose_not_permitted", "quota_exceeded"}
}

test_ceiling_and_clearance_name_every_field_above if {
	d := decide([
		{"op": "add", "path": "/request/fields/secret", "value": {"level": "restricted"}},
		{"op": "add", "path": "/request/fields/tagged", "value": {"level": "ultra"}},
	])
	{r.message | some r in d.deny; r.code == "classification_exceeds_ceiling"} == {
		"field secret is classified above the agreement's ceiling",
		"field tagged is classified above the agreement's ceiling",
	}
	count({r | some r in d.deny; r.code == "clearance_insufficient"}) == 2
}

test_caveat_missing_names_only_the_lacking_field if {
	d := decide([
		{"op": "add", "path": "/request/fields/tagged", "value": {"level": "public", "caveats": ["uk-eyes", "fvey"]}},
		{"op": "add", "path": "/request/fields/health", "value": {"level": "public", "caveats": ["uk-eyes"]}},
	])
	only(d, "caveat_missing")
	d.deny == [{"code": "caveat_missing", "message": "field tagged needs caveats the caller lacks: fvey"}]
}

test_operation_spellings_agree if {
	d := decide([
		{"op": "add", "path": "/request/fields/health", "value": {"level": "internal"}},
		{"op": "add", "path": "/agreement/datasets/person@1/fields/tagged", "value": {"operation": "mask", "keep_suffix": 2}},
	])
	d.allow
	d.obligations.health == {"operation": "pass"}
	not d.obligations.tagged # permitted but not requested: no obligation
}
