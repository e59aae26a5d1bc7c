"""mm-genre: multi-modal movie genre classification, from data to the in-browser demo."""
