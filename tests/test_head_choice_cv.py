"""The nested CV of the teacher head's choice (benchmarks/head_choice_cv.py): its repeated-CV rule."""
from benchmarks.head_choice_cv import repeated_choice
from iaa_distill.training.head_candidates import parse_candidate
from iaa_distill.training.head_selection import CandidateScore

MLP, RIDGE = parse_candidate("mlp", (8,), 0.1), parse_candidate("ridge:4", (8,), 0.1)


def test_repeated_choice_pools_every_repetition_before_the_one_standard_error_rule():
    # repetition 0 alone: mlp leads by 0.10 with a standard error of 0.02, so it is chosen
    first = [CandidateScore(MLP, [0.80, 0.82, 0.78, 0.80, 0.80]), CandidateScore(RIDGE, [0.70] * 5)]
    assert repeated_choice([first]).candidate is MLP
    # two more repetitions where ridge leads: pooled, mlp's mean lead is gone and ridge, the simpler, is kept
    later = [CandidateScore(MLP, [0.60, 0.65, 0.55, 0.60, 0.60]), CandidateScore(RIDGE, [0.75] * 5)]
    assert repeated_choice([first, later, later]).candidate is RIDGE


def test_repeated_choice_keeps_the_simpler_candidate_within_one_standard_error_of_one_k_fold_cv():
    # mlp leads by 0.03 over all 10 folds; its sd over them (0.075) / sqrt(5), 0.033, covers ridge (/ sqrt(10) would not)
    scores = [[CandidateScore(MLP, [0.9, 0.8, 0.75, 0.85, 0.7]), CandidateScore(RIDGE, [0.77] * 5)],
              [CandidateScore(MLP, [0.9, 0.8, 0.75, 0.85, 0.7]), CandidateScore(RIDGE, [0.77] * 5)]]
    assert repeated_choice(scores).candidate is RIDGE
