"""The task's images before and after the method touches them: the split plan and 8-bit conversion (prepare),
the manifests and image sets, the synthetic sets' tables, the glyph corpus and retrieved real images, export."""
