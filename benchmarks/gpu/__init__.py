"""The GPU suite's parts (``benchmarks/gpu_suite.sh``): one module per part, each writing one JSON.

a_optimizer_step  optimizer step on ViT-B/16 shapes, CUDA events, the memory-bandwidth floor
b_study_throughput  bare loop vs ``lyaptune run`` vs population mode
c_khat            K_hat (papers/003 Algorithm 2) on FC 3x1000, mini-MNIST
d_paper003        the papers/003 study (experiments/003_fc_fullbatch_constant_steps_d3.yaml), cut to fit
e_device_checks   CPU vs device agreement of the engines, checkpoint/resume and the derived step

``common`` holds what every part shares (its budget, its JSON, the cut); ``summary`` writes summary.md.
See README.md beside this file.
"""
