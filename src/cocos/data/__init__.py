"""The data: problems and their loaders (`problems`), prompt formats and code extraction (`prompts`), whether the
Hugging Face Hub can be asked (`hub`). Knows nothing of models, the sandbox or training."""
