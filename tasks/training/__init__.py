"""Training: pretraining the embedded tiny model, supervised finetuning of the policy (in process
or under `accelerate launch`) and training of the learned reward models."""
