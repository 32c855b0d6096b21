"""Alembic environment for the spire_py DataStore.

The store runs migrations itself (see ``migrate.py``): it opens a write
transaction and hands the connection over in ``config.attributes["connection"]``,
so the whole upgrade commits or rolls back as one unit, and two servers
starting at once on the same database serialize instead of racing.

Offline mode (``sql=True`` with ``sqlalchemy.url`` set to a dialect URL such as
``postgresql://`` or ``mysql://``) renders the DDL without a database, which is
how the tests check the migrations for every dialect.
"""

from alembic import context

config = context.config

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        version_table="alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "spire_py migrations run from the DataStore with a live connection; "
            "use spire_py.server.datastore.migrate.upgrade()"
        )
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table="alembic_version",
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
