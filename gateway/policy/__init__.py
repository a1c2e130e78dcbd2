"""The policy layer: Rego decisions for exchanges and the officers' workflow.

The exchange builds an input with ``gateway.policy.input.build_policy_input``
and asks the ``gateway.policy.runtime.PolicyRuntime`` (the configured
``embedded`` or ``opa`` engine, kept on the active version) to ``decide``; the
``Decision`` (``gateway.policy.engine``) it gets back never raises for engine
faults and is a deny with code ``policy_error`` when no well-formed decision
could be made. ``gateway.policy.service.PolicyService`` is the officers'
workflow and the decision log (docs/policy-engines.md).

Names are imported from their modules; this package imports nothing, so that a
policy evaluator process (``gateway.policy._evaluator``) can import the few
modules it needs without the database layer the workflow brings in.
"""
