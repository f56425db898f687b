"""one name per concept: background_jobs' message, error and result columns named as in Redis and JSON

Revision ID: 8a4f0c6e1b27
Revises: 7d3a9c2e4f15
Create Date: 2026-12-01 06:30:00

"""
from alembic import op


revision = '8a4f0c6e1b27'
down_revision = '7d3a9c2e4f15'
branch_labels = None
depends_on = None

_RENAMES = (('progress_message', 'message'), ('error_message', 'error'), ('result_data', 'result'))


def upgrade():
    with op.batch_alter_table('background_jobs') as batch:
        for old, new in _RENAMES:
            batch.alter_column(old, new_column_name=new)


def downgrade():
    with op.batch_alter_table('background_jobs') as batch:
        for old, new in _RENAMES:
            batch.alter_column(new, new_column_name=old)
