"""Generation: n candidate solutions per prompt through one backend interface (vLLM, Hugging Face,
an OpenAI-compatible server), content ids of model folders, reference log-probabilities."""
