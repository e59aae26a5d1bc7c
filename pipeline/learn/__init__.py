"""Models and how they learn (torch): text encoder, fine-tuning, student, heads, logistic regression, poster encoder, Grad-CAM."""
