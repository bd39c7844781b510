"""Training: coupled-L2 momentum SGD, the distributed custom loop, and the pretrain/finetune steps."""
