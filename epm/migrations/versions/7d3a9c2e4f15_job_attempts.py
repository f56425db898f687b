"""a job's attempt number and the history of its earlier attempts, kept with its record

Revision ID: 7d3a9c2e4f15
Revises: 5c1e7a0d2b94
Create Date: 2026-12-01 04:05:00

"""
from alembic import op
import sqlalchemy as sa


revision = '7d3a9c2e4f15'
down_revision = '5c1e7a0d2b94'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('background_jobs') as batch:
        batch.add_column(sa.Column('attempt', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('attempts', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('background_jobs') as batch:
        batch.drop_column('attempts')
        batch.drop_column('attempt')
