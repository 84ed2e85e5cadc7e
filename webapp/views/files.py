"""Downloads of stored files, for their owner (or an admin) only."""

from __future__ import annotations

import uuid

from flask import Blueprint, request
from flask_login import login_required

from webapp import storage
from webapp.access import file_or_404

bp = Blueprint("files", __name__, url_prefix="/files")


@bp.get("/<uuid:file_id>")
@login_required
def download(file_id: uuid.UUID):
    """Stream the file; ``?inline=1`` shows images in the page instead of downloading."""
    stored = file_or_404(file_id)
    inline = request.args.get("inline") == "1" and stored.content_type.startswith("image/")
    return storage.download_response(stored, inline=inline)
