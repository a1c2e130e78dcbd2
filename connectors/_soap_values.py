"""The values of a SOAP reply checked against the WSDL's XSD types, before zeep reads it.

zeep reads a value that does not parse as its declared XSD type as "no value"
(``AnySimpleType.parse_xmlelement`` swallows the error, strict mode or not),
and Python's ``int()`` behind ``xs:int`` takes ``1_0`` and non-ASCII digits. So
``verify_values`` walks a reply against the types: every simple value must have
its type's lexical form and parse, or the reply does not match the WSDL.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree
from zeep.utils import qname_attr
from zeep.xsd.const import xsi_ns
from zeep.xsd.elements import Element as XsdElement
from zeep.xsd.types import AnySimpleType, ComplexType
from zeep.xsd.types import builtins as xsd_builtins

__all__ = ["verify_values"]

_SOAP_BODIES = (
    "{http://schemas.xmlsoap.org/soap/envelope/}Body",
    "{http://www.w3.org/2003/05/soap-envelope}Body",
)
# XSD lexical forms of the types whose Python parse is looser (whitespace already collapsed).
_FLOAT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?INF|NaN"
_LEXICAL: tuple[tuple[type, re.Pattern[str]], ...] = (
    (xsd_builtins.Integer, re.compile(r"[+-]?[0-9]+")),
    (xsd_builtins.Decimal, re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")),
    (xsd_builtins.Float, re.compile(_FLOAT)),
    (xsd_builtins.Double, re.compile(_FLOAT)),
    (xsd_builtins.Boolean, re.compile("true|false|1|0")),
)


def verify_values(operation: Any, doc: etree._Element, schema: Any) -> None:
    """Raise ``ValueError`` where zeep would read a value of the reply body as "none".

    The walk follows the output element's XSD type the way zeep's parser does
    (``xsi:type`` included); children it does not know are left to zeep, which
    refuses them in strict mode. The error never carries the value.
    """
    element = getattr(getattr(operation, "output", None), "body", None)
    if not isinstance(element, XsdElement) or element.qname is None:
        return
    for body in (doc.find(tag) for tag in _SOAP_BODIES):
        if body is not None:
            for node in body.iterchildren(element.qname.text):
                _verify_node(element, node, schema)


def _verify_simple(xsd_type: AnySimpleType, text: str | None) -> None:
    if text is None:
        return  # an empty element: zeep's "no value", and no parse failed
    for kind, lexical in _LEXICAL:
        if isinstance(xsd_type, kind):
            if not lexical.fullmatch(text.strip(" \t\r\n")):
                raise ValueError(f"a value is not a valid {xsd_type.name or 'typed value'}")
            break
    try:
        xsd_type.pythonvalue(text)
    except (TypeError, ValueError, ArithmeticError):
        raise ValueError(f"a value does not parse as {xsd_type.name or 'its type'}") from None


def _verify_node(element: XsdElement, node: etree._Element, schema: Any) -> None:
    xsd_type = element.type
    declared = qname_attr(node, xsi_ns("type"))
    if declared is not None:
        xsd_type = schema.get_type(declared, fail_silently=True) or xsd_type
    if isinstance(xsd_type, AnySimpleType):
        _verify_simple(xsd_type, node.text)
        return
    if not isinstance(xsd_type, ComplexType):
        return  # xs:anyType: zeep keeps the raw text or nodes
    for _, attribute in xsd_type.attributes:
        qname = getattr(attribute, "qname", None)
        if qname is not None and isinstance(attribute.type, AnySimpleType):
            value = node.get(qname.text)
            if value is not None:
                _verify_simple(attribute.type, value)
    content = getattr(xsd_type, "_element", None)
    if isinstance(content, XsdElement) and isinstance(content.type, AnySimpleType):
        _verify_simple(content.type, node.text)  # simpleContent: the text is the value
        return
    children = {
        child.qname.text: child
        for _, child in xsd_type.elements
        if isinstance(child, XsdElement) and child.qname is not None
    }
    for sub in node.iterchildren(tag=etree.Element):
        declared_child = children.get(sub.tag)
        if declared_child is not None:
            _verify_node(declared_child, sub, schema)
