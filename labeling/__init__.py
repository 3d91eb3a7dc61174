"""Pure labeling logic: taxonomy, text normalisation, matching, scoring, selection."""
