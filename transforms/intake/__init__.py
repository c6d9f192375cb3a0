"""Intake: the three kinds of delivery. A source database read in a read-only transaction, a file
export (CSV/XML with a delivery manifest) from the inbox, and a ready package from a prepared
system (validated, then taken in as it is or prepared).

May import: every layer below it (``common`` … ``packaging``); nothing above.
"""
