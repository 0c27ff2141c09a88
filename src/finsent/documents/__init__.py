"""Long documents: extraction, sentence segmentation, retrieval, analysis and the report."""
