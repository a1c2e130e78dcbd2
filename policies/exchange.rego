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

obligations[name] := field_obligation(name) if {
	some name in requested_names
	permitted_field(name)
}

field_obligation(_) := {"operation": "aggregate", "min_k": aggregate_min_k} if {
	query_kind == "aggregate"
}

field_obligation(name) := operation_object(dataset_terms.fields[name]) if {
	query_kind != "aggregate"
}

# An agreement may spell an operation as a bare string ("pass") or as an object.
operation_object(op) := {"operation": op} if is_string(op)

operation_object(op) := op if {
	is_object(op)
	is_string(op.operation)
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

permitted_field(name) if {
	some listed, _ in dataset_fields
	listed == name
}

query_kind := input.request.query.kind if is_string(input.request.query.kind)

else := "record"

aggregate_min_k := dataset_terms.aggregate.min_k if is_number(dataset_terms.aggregate.min_k)
