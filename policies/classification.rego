# Classification: levels, clearance, ceilings and caveats.
#
# The scheme travels in the input (`input.scheme.levels`, lowest first) so a
# recorded decision carries the scheme that made it. Unknown names fail closed:
# an unknown data level ranks above every level, an unknown clearance or
# ceiling ranks below every level.
package accord.exchange

levels := input.scheme.levels if valid_levels

top_rank := count(levels) - 1

# Each level's rank, lowest first, built once per decision (valid_levels makes
# the names unique).
level_rank := {name: i | some i, name in levels}

# Rank of a data level; a level the scheme does not know outranks them all.
data_rank(level) := level_rank[level] if {
	level in levels
} else := count(levels)

# Rank of a clearance or ceiling; an unknown one is below the lowest level.
grant_rank(level) := level_rank[level] if {
	level in levels
} else := -1

# A missing ceiling or clearance grants nothing.
ceiling_rank := grant_rank(agreement.ceiling) if is_string(agreement.ceiling)

else := -1

clearance_rank := grant_rank(input.caller.clearance) if is_string(input.caller.clearance)

else := -1

field_label(name) := input.request.fields[name] if is_object(input.request.fields[name])

else := {}

# A field without a level counts as the highest level of the scheme.
field_rank(name) := data_rank(field_label(name).level) if {
	is_string(field_label(name).level)
} else := top_rank

# Every requested field's rank, computed once per decision and read by the rules below.
field_ranks := {name: field_rank(name) | some name in requested_names}

field_caveats(name) := {c | some c in field_label(name).caveats; is_string(c)} if {
	is_array(field_label(name).caveats)
} else := set()

caller_caveats := {c | some c in input.caller.caveats; is_string(c)} if {
	is_array(input.caller.caveats)
} else := set()

sensitive_kinds := {"sensitive", "special"}

# The highest level among the requested fields, for the audit entry.
# (`count(levels) > 0` first: with no valid scheme the body fails outright and the
# `else` chain answers null on every engine, including regorus' VM.)
decision_level := levels[min([max(ranks), top_rank])] if {
	count(levels) > 0
	ranks := [rank | some rank in field_ranks]
	count(ranks) > 0
} else := levels[0] if {
	count(levels) > 0
} else := null

deny_reasons contains reason(
	"classification_exceeds_ceiling",
	concat("", ["field ", name, " is classified above the agreement's ceiling"]),
) if {
	agreement
	some name, rank in field_ranks
	rank > ceiling_rank
}

deny_reasons contains reason(
	"clearance_insufficient",
	concat("", ["field ", name, " is classified above the caller's clearance"]),
) if {
	some name, rank in field_ranks
	rank > clearance_rank
}

deny_reasons contains reason(
	"caveat_missing",
	concat("", ["field ", name, " needs caveats the caller lacks: ", concat(", ", sort(missing))]),
) if {
	some name in requested_names
	missing := field_caveats(name) - caller_caveats
	count(missing) > 0
}

deny_reasons contains reason(
	"legal_basis_required",
	concat("", ["field ", name, " is ", kind, " personal data and the agreement names no legal basis"]),
) if {
	some name in requested_names
	kind := field_label(name).personal
	kind in sensitive_kinds
	not has_legal_basis
}

has_legal_basis if {
	is_string(agreement.legal_basis)
	agreement.legal_basis != ""
}
