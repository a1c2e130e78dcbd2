# Agreement terms: existence, lifecycle, parties, coverage, purposes, quotas,
# aggregate-only fields and aggregate thresholds.
#
# The validity window is inclusive at both ends (X.509 style): an agreement is
# in force when not_before <= now <= not_after, all in unix seconds.
package accord.exchange

deny_reasons contains reason("no_agreement", "no agreement was resolved for this request") if {
	not agreement
}

deny_reasons contains reason("agreement_inactive", concat("", ["agreement is ", status_text])) if {
	agreement
	not agreement.status == "active"
}

status_text := agreement.status if is_string(agreement.status)

else := "in an unknown state"

# One fact, one reason: the window is judged only for an agreement whose status
# is active, so an agreement whose status says expired (or suspended) is not also
# reported as past its window. (A window that ends before it starts is out of
# force at every time; it is reported once, as not yet valid.)
deny_reasons contains reason("agreement_inactive", "agreement is not yet valid") if {
	agreement.status == "active"
	is_number(input.now.unix)
	is_number(agreement.not_before)
	input.now.unix < agreement.not_before
}

deny_reasons contains reason("agreement_inactive", "agreement has expired") if {
	agreement.status == "active"
	is_number(input.now.unix)
	is_number(agreement.not_after)
	input.now.unix > agreement.not_after
	not before_window
}

before_window if {
	is_number(agreement.not_before)
	input.now.unix < agreement.not_before
}

deny_reasons contains reason("wrong_consumer", "the caller is not the agreement's consumer") if {
	agreement
	not input.caller.department == agreement.consumer
}

deny_reasons contains reason("dataset_not_covered", "the agreement does not cover this dataset") if {
	agreement
	not dataset_terms
}

deny_reasons contains reason(
	"field_not_permitted",
	concat("", ["field ", name, " is not permitted by the agreement"]),
) if {
	dataset_terms
	some name in (requested_names - permitted_names)
}

deny_reasons contains reason("purpose_not_permitted", "the agreement does not allow this purpose") if {
	agreement
	not purpose_permitted
}

purpose_permitted if {
	is_string(input.request.purpose)
	is_array(agreement.purposes)
	input.request.purpose in agreement.purposes
}

deny_reasons contains reason("quota_exceeded", concat("", [window, " quota reached"])) if {
	some window, limit in quota_limits
	not usage_below(window, limit)
}

quota_limits[window] := agreement.quotas[key] if {
	some window, key in {"minute": "per_minute", "day": "per_day"}
	is_number(agreement.quotas[key])
}

usage_below(window, limit) if {
	is_number(input.usage[window])
	input.usage[window] < limit
}

deny_reasons contains reason(
	"aggregate_not_permitted",
	"the agreement allows no aggregate queries on this dataset",
) if {
	dataset_terms
	query_kind == "aggregate"
	not aggregate_min_k
}

# A field the agreement releases only in aggregates is refused to any other query:
# a record would carry nothing of it, yet its answer (or a predicate's) would
# still tell the caller that the subject exists.
deny_reasons contains reason(
	"aggregate_only",
	concat("", ["field ", name, " is released only in aggregates"]),
) if {
	query_kind != "aggregate"
	some name in requested_names
	field_operations[name].operation == "aggregate"
}

# A field the agreement releases only as a yes/no answer is refused to a record
# query: its record would carry nothing of it, yet the answer would still tell the
# caller that the subject exists. (An aggregate is judged by aggregation.rego.)
deny_reasons contains reason(
	"verify_only",
	concat("", ["field ", name, " can only be asked about with a verify query"]),
) if {
	query_kind == "record"
	some name in requested_names
	field_operations[name].operation == "verify_only"
}

deny_reasons contains reason("aggregate_below_k", "the cohort is smaller than the agreement's minimum k") if {
	query_kind == "aggregate"
	is_number(input.request.query.cohort_size)
	input.request.query.cohort_size < aggregate_min_k
}
