"""program versions: each session's programs numbered 1, 2, 3 in the order generated

Revision ID: 5b2e7c1d9a40
Revises: 073dfe440c56
Create Date: 2026-12-01 03:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '5b2e7c1d9a40'
down_revision = '073dfe440c56'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('programs') as batch:
        batch.add_column(sa.Column('version', sa.Integer(), nullable=False, server_default='1'))
    # Existing programs get their place among their session's programs, oldest first.
    op.execute("""
        UPDATE programs SET version = (
            SELECT COUNT(*) FROM programs AS earlier
            WHERE earlier.session_id = programs.session_id
              AND (earlier.created_at < programs.created_at
                   OR (earlier.created_at = programs.created_at AND earlier.id <= programs.id)))
        WHERE session_id IS NOT NULL
    """)


def downgrade():
    with op.batch_alter_table('programs') as batch:
        batch.drop_column('version')
