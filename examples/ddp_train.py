"""A DDP training loop under torchrun, watched by torchwatch with no distributed code of its own.

    torchrun --nproc_per_node=2 examples/ddp_train.py --epochs 3 --logdir runs/ddp

NCCL on GPUs (one per process), gloo on CPU. Every rank runs the same code: only rank 0 prints
and writes TensorBoard files, and each phase's metrics are reduced over all ranks at its end
(one small all_gather), so the lines and the event files describe the whole job. The ``sample``
phase runs on rank 0 alone, hence ``reduce=False``.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import torchwatch as tw


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--logdir", default="runs/ddp")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if cuda:  # before init_process_group: NCCL and torchwatch's exchange use the current device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    torch.manual_seed(0)  # the same data on every rank; the samplers split it
    x = torch.randn(1000, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(1000, 1)
    train_set, val_set = TensorDataset(x[:800], y[:800]), TensorDataset(x[800:], y[800:])
    sampler = DistributedSampler(train_set, shuffle=True)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    val_loader = DataLoader(val_set, batch_size=64,
                            sampler=DistributedSampler(val_set, shuffle=False))

    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 1))
    model = DDP(net.to(device), device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tw.init(logdir=args.logdir, model=model, optimizer=optimizer, total_epochs=args.epochs)

    @tw.watch_epoch
    def train_one_epoch(loader):
        for xb, yb in tw.steps(loader):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tw.log(loss=loss)  # weighted by the batch's samples; reduced over ranks at the end

    probe = torch.randn(8, 16, device=device)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        train_one_epoch(train_loader)
        with tw.phase("val"):  # every rank, on its shard: the line shows the global mean
            for xb, yb in val_loader:
                xb, yb = xb.to(device), yb.to(device)
                tw.log(loss=F.mse_loss(model(xb), yb), n=len(xb))
        if rank == 0:  # rank 0 alone: no reduction, and the bare module, not the DDP wrapper
            with tw.phase("sample", model=model.module, reduce=False):
                tw.log(pred_std=model.module(probe).std())
    tw.close()
    dist.barrier()  # rank 0 ran a phase of its own: tear down together
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
