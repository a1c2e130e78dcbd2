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

# Rank of a clearance or ceiling; an unknown one is below the lowest level.
# (`object.get` is one lookup in the map; `level in levels` would scan the array.)
grant_rank(level) := object.get(level_rank, level, -1)

# A missing ceiling or clearance grants nothing.
ceiling_rank := grant_rank(agreement.ceiling) if is_string(agreement.ceiling)

else := -1

clearance_rank := grant_rank(input.caller.clearance) if is_string(input.caller.clearance)

else := -1

# Each requested field's label, read once per decision: the rules below look
# a field's label up here instead of calling a function for it per rule. A
# label that is not an object says nothing, so its field is left out.
field_labels := {name: label |
	is_object(input.request.fields)
	some name, label in input.request.fields
	is_object(label)
}

# The rank of the level each requested field's label names; a level the scheme
# does not know outranks them all.
labelled_ranks := {name: object.get(level_rank, label.level, count(levels)) |
	some name, label in field_labels
	is_string(label.level)
}

# Every requested field's rank, computed once per decision and read by the
# rules below; a field without a level counts as the highest level of the scheme.
field_ranks := {name: object.get(labelled_ranks, name, top_rank) | some name in requested_names}

caller_caveats := {c | some c in input.caller.caveats; is_string(c)} if {
	is_array(input.caller.caveats)
} else := set()

# Every caveat a requested field needs: the caveat rule below builds each
# field's missing set only when the caller lacks one of these.
requested_caveats := {c |
	some label in field_labels
	is_array(label.caveats)
	some c in label.caveats
	is_string(c)
}

sensitive_kinds := {"sensitive", "special"}

# The highest rank among the requested fields. (`count(levels) > 0` first: with
# no valid scheme there are no ranks, and regorus' VM would see undefined ones.)
highest_rank := max(ranks) if {
	count(levels) > 0
	ranks := [rank | some rank in field_ranks]
	count(ranks) > 0
}

# The highest level among the requested fields, for the audit entry.
# (`count(levels) > 0` first: with no valid scheme the body fails outright and the
# `else` chain answers null on every engine, including regorus' VM.)
decision_level := levels[min([highest_rank, top_rank])] if {
	count(levels) > 0
	is_number(highest_rank)
} else := levels[0] if {
	count(levels) > 0
} else := null

# The rules below judge only the fields the agreement permits: any other field
# is refused as `field_not_permitted` already, and a level, caveat or legal-basis
# reason about a field the agreement does not release would not be true.
permitted_ranks := object.filter(field_ranks, permitted_names)

# (`count(levels) > 0` first, as for `highest_rank`.)
permitted_highest := max(ranks) if {
	count(levels) > 0
	ranks := [rank | some rank in permitted_ranks]
	count(ranks) > 0
}

# The ceiling and clearance rules compare each field only when the highest
# rank exceeds the grant, so an allowed request costs one comparison each.
deny_reasons contains reason(
	"classification_exceeds_ceiling",
	concat("", ["field ", name, " is classified above the agreement's ceiling"]),
) if {
	agreement
	permitted_highest > ceiling_rank
	some name, rank in permitted_ranks
	rank > ceiling_rank
}

deny_reasons contains reason(
	"clearance_insufficient",
	concat("", ["field ", name, " is classified above the caller's clearance"]),
) if {
	permitted_highest > clearance_rank
	some name, rank in permitted_ranks
	rank > clearance_rank
}

deny_reasons contains reason(
	"caveat_missing",
	concat("", ["field ", name, " needs caveats the caller lacks: ", concat(", ", sort(missing))]),
) if {
	count(requested_caveats - caller_caveats) > 0
	some name, label in field_labels
	name in permitted_names
	is_array(label.caveats)
	missing := {c | some c in label.caveats; is_string(c)} - caller_caveats
	count(missing) > 0
}

deny_reasons contains reason(
	"legal_basis_required",
	concat("", ["field ", name, " is ", kind, " personal data and the agreement names no legal basis"]),
) if {
	not has_legal_basis
	some name, label in field_labels
	name in permitted_names
	kind := label.personal
	kind in sensitive_kinds
}

has_legal_basis if {
	is_string(agreement.legal_basis)
	agreement.legal_basis != ""
}
