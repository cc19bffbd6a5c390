"""The LoRA recipe: config, data (tokenise and pack), training (peft + Trainer), the run that
ties them together, and adapter folders."""
