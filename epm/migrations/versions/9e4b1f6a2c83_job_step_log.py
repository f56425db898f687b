"""a finished job's step log (its timeline: each declared step with its start and end), kept with its record

Revision ID: 9e4b1f6a2c83
Revises: 7d3a9c2e4f15
Create Date: 2026-12-02 09:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '9e4b1f6a2c83'
down_revision = '7d3a9c2e4f15'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('background_jobs') as batch:
        batch.add_column(sa.Column('step_log', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('background_jobs') as batch:
        batch.drop_column('step_log')
