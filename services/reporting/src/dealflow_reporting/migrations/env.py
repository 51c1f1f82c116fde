from alembic import context

from dealflow_common.migrations import configure_and_run

configure_and_run(context)
