"""Words in videos: on-screen text (OCR) and sentence embeddings for searching spoken and shown words."""
