"""The paper's steps, in its order: caption, embed, mix (Algorithm 1), pretrain the text-to-image model,
fine-tune it InstructPix2Pix-style, sample and generate; `replicates` repeats the generator's steps with other seeds."""
