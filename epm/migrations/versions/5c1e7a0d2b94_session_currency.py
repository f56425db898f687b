"""a currency per strategy session (ISO 4217 code, USD for the sessions that had none)

Revision ID: 5c1e7a0d2b94
Revises: 5b2e7c1d9a40
Create Date: 2026-12-01 02:45:00

"""
from alembic import op
import sqlalchemy as sa


revision = '5c1e7a0d2b94'
down_revision = '5b2e7c1d9a40'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('strategy_sessions') as batch:
        batch.add_column(sa.Column('currency', sa.String(length=3), nullable=False, server_default='USD'))


def downgrade():
    with op.batch_alter_table('strategy_sessions') as batch:
        batch.drop_column('currency')
