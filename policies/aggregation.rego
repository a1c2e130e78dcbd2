# Aggregate queries: which fields an aggregate may group by and which it may sum.
#
# An aggregate releases the values it groups by (as cell keys) and the sums it
# computes, so each field it names is judged by the operation the agreement
# gives that field (docs/connectors.md, "Release operations"):
#
#   - `aggregate` and `pass`: grouped by and summed as they are;
#   - `generalise`: grouped by its generalised value only (exchange.rego puts
#     the generalisation in the obligation); a sum would add up exact values;
#   - `mask`, `verify_only`, `pseudonymise`, `drop`: neither. A group key is the
#     value in clear, a sum adds up exact values, and counts per pseudonym are
#     counts per person.
#
# The request names its group-by and summed fields in `input.request.query`
# (`group_by`, `sums`). An input without `group_by` (recorded before it was
# carried) has every requested field judged as a group-by, and one without
# `sums` sums nothing: the release step still refuses to sum a field whose
# obligation is not `aggregate` or `pass`.
package accord.exchange

groupable_operations := {"aggregate", "pass", "generalise"}

summable_operations := {"aggregate", "pass"}

groupable(op) if op in groupable_operations

summable(op) if op in summable_operations

query_object := input.request.query if is_object(input.request.query)

else := {}

# (`object.get` with a default: the value is always defined, which regorus' VM
# needs; see validation.rego.)
query_group_by := object.get(query_object, "group_by", null)

query_sums := object.get(query_object, "sums", null)

grouped_names := {name | some name in query_group_by; is_string(name)} if is_array(query_group_by)

else := requested_names

summed_names := {name | some name in query_sums; is_string(name)} if is_array(query_sums)

else := set()

group_verb := "grouped by" if is_array(query_group_by)

else := "aggregated"

deny_reasons contains reason(
	"aggregate_not_allowed",
	concat("", ["field ", name, " cannot be ", group_verb, ": the agreement releases it as ", op]),
) if {
	query_kind == "aggregate"
	some name in grouped_names
	op := field_operations[name].operation
	not groupable(op)
}

deny_reasons contains reason(
	"aggregate_not_allowed",
	concat("", ["field ", name, " cannot be summed: the agreement releases it as ", op]),
) if {
	query_kind == "aggregate"
	some name in summed_names
	op := field_operations[name].operation
	not summable(op)
}
