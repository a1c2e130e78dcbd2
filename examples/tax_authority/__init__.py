"""Sample tax authority: a SOAP 1.1 document/literal service with its own WSDL."""
