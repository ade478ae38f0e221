"""Reward of the tool-use task (examples/yaml/tool_sums.yaml): 1 when the response's last line is the sum.

A response that used the calculator reads `<tool_call>...</tool_call>23 + 45 = 68\n68` (the tool's reply, then the
model's answer); one that did not is just the answer.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return float(solution_str.rsplit("\n", 1)[-1].strip() == str(ground_truth).strip())
