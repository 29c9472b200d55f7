"""rrise-sklearn."""
