"""Simulators of the municipal source systems (Lex, …) used by the demo and the tests."""
