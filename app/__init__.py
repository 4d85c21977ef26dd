"""Involve Asia conversions -> Google Cloud Storage, as a Cloud Run job."""
