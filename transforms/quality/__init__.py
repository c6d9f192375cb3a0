"""The quality gate and the quarantine: Great Expectations suites run over a staged batch (reports
in Swedish and English, sensitive columns masked), quarantine cases in the catalogue, the
archivist's decision (approve, approve with deviation, reject) and the page that shows them.

May import: ``common``, ``catalogue``, ``config``, ``staging``.
"""
