"""Scripts the kit runs inside its containers (stdin to ``python -``): they need the image's packages."""
