# Input shape checks: a malformed input is denied with `invalid_input`, never
# guessed at.
#
# Every other rule only reads well-typed values, so the reasons they report do
# not depend on how an engine treats a wrong type; this rule names the value
# that is wrong instead. Negations only ever apply to rules whose arguments are
# bound (`not valid_x`, `not f(bound)`): OPA evaluates the arguments of a
# negated call outside the negation, other engines inside it.
#
# Problem keys are bound in the body (`k := "..."`) rather than written in the
# head, and an optional value is found by iterating its object (or read with
# `object.get` and a default) rather than by assigning a possibly undefined
# path: the embedded engine compiles this bundle to regorus' VM, which supports
# those forms and gets the other two wrong.
package accord.exchange

deny_reasons contains reason("invalid_input", concat("", ["input.", path, " ", problem])) if {
	some path, problem in input_problems
}

input_problems[k] := "must be a non-empty array of unique strings" if {
	k := "scheme.levels"
	not valid_levels
}

input_problems[k] := "must be a number" if {
	k := "now.unix"
	not valid_now
}

input_problems[concat(".", ["caller", key])] := "must be a non-empty string" if {
	some key in {"department", "clearance"}
	not valid_input_string("caller", key)
}

input_problems[k] := "must be an array of strings" if {
	k := "caller.caveats"
	not valid_caller_caveats
}

input_problems[concat(".", ["request", key])] := "must be a non-empty string" if {
	some key in {"dataset", "purpose"}
	not valid_input_string("request", key)
}

input_problems[k] := "must be a non-empty object" if {
	k := "request.fields"
	not valid_fields
}

input_problems[k] := "must be record, verify or aggregate" if {
	k := "request.query.kind"
	not valid_kind
}

input_problems[k] := "must be a number" if {
	k := "request.query.cohort_size"
	some key, cohort in input.request.query
	key == "cohort_size"
	not is_number(cohort)
}

# An aggregate's group-by and summed fields, when given, are requested fields:
# the rules judge a field's classification by its label in request.fields.
input_problems[concat(".", ["request.query", key])] := "must be an array of strings" if {
	some key, names in input.request.query
	key in {"group_by", "sums"}
	not string_array(names)
}

input_problems[concat(".", ["request.query", key])] := "must name only fields in request.fields" if {
	some key, names in input.request.query
	key in {"group_by", "sums"}
	string_array(names)
	some name in names
	not is_requested(name)
}

is_requested(name) if name in requested_names

input_problems[concat("", ["request.fields.", name])] := "has a malformed label" if {
	is_object(input.request.fields)
	some name, label in input.request.fields
	not valid_label(label)
}

input_problems[concat(".", ["usage", window])] := "must be a number" if {
	some window in {"minute", "day"}
	not valid_input_number("usage", window)
}

input_problems[concat(".", ["agreement", key])] := "must be a non-empty string" if {
	agreement
	some key in {"id", "status", "consumer", "ceiling"}
	not valid_string(agreement, key)
}

input_problems[concat(".", ["agreement", key])] := "must be a number" if {
	agreement
	some key in {"not_before", "not_after"}
	not valid_number(agreement, key)
}

input_problems[k] := "must be an array of strings" if {
	k := "agreement.purposes"
	agreement
	not valid_purposes
}

input_problems[concat("", ["agreement.datasets.", input.request.dataset, ".fields.", name])] := "has a malformed operation" if {
	some name in (permitted_names - object.keys(field_operations))
}

valid_levels if {
	string_array(input.scheme.levels)
	count(input.scheme.levels) > 0
	count({l | some l in input.scheme.levels}) == count(input.scheme.levels)
}

valid_now if is_number(input.now.unix)

valid_caller_caveats if string_array(input.caller.caveats)

valid_fields if {
	is_object(input.request.fields)
	count(input.request.fields) > 0
}

valid_kind if input.request.query.kind in {"record", "verify", "aggregate"}

valid_purposes if string_array(agreement.purposes)

valid_string(obj, key) if {
	is_string(obj[key])
	obj[key] != ""
}

valid_number(obj, key) if is_number(obj[key])

valid_input_string(section, key) if {
	is_string(input[section][key])
	input[section][key] != ""
}

valid_input_number(section, key) if is_number(input[section][key])

# Each optional key is read with `object.get` and a default that passes its
# check: an absent key is valid, a present one must have the right type. That is
# one lookup per key and field; `key in object.keys(label)` would build the
# label's key set for every key checked.
valid_label(label) if {
	is_object(label)
	is_string(object.get(label, "level", ""))
	is_string(object.get(label, "personal", ""))
	caveats := object.get(label, "caveats", [])
	is_array(caveats)
	every c in caveats {
		is_string(c)
	}
}

valid_label(label) if label == null

string_array(a) if {
	is_array(a)
	every x in a {
		is_string(x)
	}
}

input_problems[concat(".", ["agreement.quotas", key])] := "must be a number" if {
	is_object(agreement.quotas)
	some key, limit in agreement.quotas
	not is_number(limit)
}

input_problems[k] := "must be an object" if {
	k := "agreement.quotas"
	agreement
	not valid_quotas
}

# Absent quotas are valid (the `{}` default); present ones must be an object.
valid_quotas if is_object(object.get(agreement, "quotas", {}))
