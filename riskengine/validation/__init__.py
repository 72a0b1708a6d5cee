"""Model validation on the platform (issue #16, methodology v1.1 sections 7 and 8): backtest and
stress runs over every member account, sharded on Celery like the margin sweeps; their reports
(ops dashboard, proposals, member pages, the disclosure page) read what the runs stored.

Modules: ``models`` (runs, shards, per-account results), ``services`` (creating runs, running a
shard, the venue-level reduce, the alerts), ``storage`` (the bulk writes and the compact series),
``selectors`` (the reads of every report), ``dashboard`` (the ops dashboard's panels). Part of the
``riskengine`` app: governance (``riskengine.services``) refuses to approve a set whose
validation is missing.
"""
