"""a finished job's step log (column timeline, as the field: each declared step with its start and end), kept with its record

Revision ID: 9e4b1f6a2c83
Revises: 8a4f0c6e1b27
Create Date: 2026-12-02 09:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '9e4b1f6a2c83'
down_revision = '8a4f0c6e1b27'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('background_jobs') as batch:
        batch.add_column(sa.Column('timeline', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('background_jobs') as batch:
        batch.drop_column('timeline')
