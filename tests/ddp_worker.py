"""Run by tests/test_train.py under torchrun: train, then record this rank's weights and which
ranks wrote checkpoints."""
import json
import os
import sys

import torch

import mobilenets.engine.loop as L
import mobilenets.tasks.classification.train as T

out = sys.argv[1]
writes = []
_save = L.save_checkpoint
L.save_checkpoint = lambda path, state: (writes.append(str(path)), _save(path, state))
cfg = T.make_config("smoke", out_dir=out, limit_train=512, limit_val=64, epochs=6,
                    batch_size=16, lr=0.05, scale_lr=False, checkpoint_every=8,
                    min_crop_area=1.0, flip=False)
result = T.train(cfg)
rank = int(os.environ["RANK"])
torch.save(result.model.state_dict(), f"{out}/rank{rank}_weights.pt")
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"writes": writes, "history": result.history}, f)
