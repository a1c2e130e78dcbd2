# Accord exchange policy: the decision the gateway asks for on every exchange.
#
# The decision is a pure function of `input` (schemas/policy-input.schema.json):
# caller, resolved agreement, request, classification scheme, clock and usage
# counters are all in the one recorded input document, so any decision can be
# replayed exactly, by either engine, for the impact dry-run.
package accord.exchange

# Every reason is reported: `deny_reasons` is a set each rule adds to.
decision := {
	"allow": allow,
	"deny": [r | some r in deny_reasons],
	"obligations": released_obligations,
	"level": decision_level,
}

default allow := false

allow if count(deny_reasons) == 0

# Obligations only accompany an allow: a denied exchange releases nothing, and a
# field that has no obligation is never released.
released_obligations := obligations if allow

else := {}

# An aggregate query releases each field it groups by or sums under the
# operation the agreement gives that field, with the agreement's minimum k: a
# `generalise` field is grouped by its generalised value, an `aggregate` or
# `pass` field leaves only as group keys and sums of at least k subjects. Any
# other operation cannot be aggregated (aggregation.rego refuses it), so it gets
# no obligation here.
obligations[name] := {"operation": "aggregate", "min_k": aggregate_min_k} if {
	query_kind == "aggregate"
	some name in requested_names
	field_operations[name].operation in summable_operations
}

obligations[name] := object.union(field_operations[name], {"min_k": aggregate_min_k}) if {
	query_kind == "aggregate"
	some name in requested_names
	field_operations[name].operation == "generalise"
}

# Any other query carries each requested field's operation from the agreement.
obligations[name] := operation if {
	query_kind != "aggregate"
	some name, operation in object.filter(field_operations, requested_names)
}

reason(code, message) := {"code": code, "message": message}

# --- views of the input that every rule shares -----------------------------

agreement := input.agreement if is_object(input.agreement)

dataset_terms := agreement.datasets[input.request.dataset] if {
	is_string(input.request.dataset)
	is_object(agreement.datasets[input.request.dataset])
}

dataset_fields := dataset_terms.fields if is_object(dataset_terms.fields)

else := {}

requested_names contains name if {
	is_object(input.request.fields)
	some name, _ in input.request.fields
}

# The field names the agreement permits, as a set built once per decision:
# `name in permitted_names` (or a set difference) is then a lookup, where
# scanning dataset_fields for each requested field cost O(fields) per call.
permitted_names := object.keys(dataset_fields)

# Each permitted field's operation as an object, built once per decision and
# read by the obligations and by validation.rego. An agreement may spell an
# operation as a bare string ("pass") or as an object; any other value is left
# out here and reported by validation.rego. (Two rule bodies rather than a
# function: regorus' VM keeps a key whose value is an undefined function call.)
field_operations[name] := {"operation": op} if {
	some name, op in dataset_fields
	is_string(op)
}

field_operations[name] := op if {
	some name, op in dataset_fields
	is_object(op)
	is_string(op.operation)
}

query_kind := input.request.query.kind if is_string(input.request.query.kind)

else := "record"

aggregate_min_k := dataset_terms.aggregate.min_k if is_number(dataset_terms.aggregate.min_k)
