"""Plain functions for every stage of the loop, one package per stage: prompts, generation,
scoring, selection, training, evaluation, the lake and the runtime. No Prefect decorators here
(flows/ wraps and composes these functions); never imports flows/."""
