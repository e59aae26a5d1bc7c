"""Models and how they learn (torch): text encoder, fine-tuning, heads, logistic regression, poster encoder, Grad-CAM."""
