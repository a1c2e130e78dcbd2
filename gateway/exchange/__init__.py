"""The exchange flow: one module per step, orchestrated by ``service.ExchangeService``."""
