# Produces the golden values of tests/accel/api_test.cpp (SgdMatchesTorch) with PyTorch.
# Run: /usr/bin/python3 tests/accel/sgd_golden.py
import torch

grads = [torch.tensor([0.1, -0.2, 0.3, -0.4]), torch.tensor([-0.5, 0.25, 0.125, 1.0]),
         torch.tensor([2.0, -1.0, 0.5, 0.0])]
cases = [dict(lr=0.1, momentum=0.9, weight_decay=0.01),
         dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
         dict(lr=0.05, momentum=0.5, dampening=0.25)]
for kw in cases:
    p = torch.nn.Parameter(torch.tensor([0.5, -1.25, 2.0, 0.75]))
    opt = torch.optim.SGD([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    print(kw, [float(x) for x in p.data])
