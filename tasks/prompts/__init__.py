"""Where problems come from: prompt sources with their reference answers, the prompts table, and
the embedded demo (the synthetic arithmetic task, its tiny model, small fixtures)."""
