"""The noisetune service: the REST API over the shared database, and the ``noisetune`` CLI.

It validates and stores studies and reads back what workers write; it never imports torch
or the worker package (see DESIGN: the database is the only contract).
"""
