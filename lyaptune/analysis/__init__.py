"""Analysis of stored studies: comparison tables, budget curves, sensitivity, figures and reports.

Functions take a :class:`Study` (or DataFrames) and return DataFrames or matplotlib Figures; reading
happens in :func:`load_study` and writing in :func:`write_report`.

Example::

    from lyaptune.analysis import load_study, compare, budget_curve, write_report

    study = load_study("runs/quickstart")
    table = compare(study)  # reference, primary metric: from the spec (METHODS.md section 8)
    verdicts = evaluate_claims(study)  # supported / contradicted / inconclusive per spec claim
    curve = budget_curve(study, "adam-exponential")
    write_report(study, "runs/quickstart/report")
"""

from lyaptune.analysis.budget import (
    FAILED_POLICIES,
    MatchingBudget,
    budget_curve,
    expected_best,
    matching_budget,
    matching_budgets,
    search_trial_values,
)
from lyaptune.analysis.claims import (
    CLAIM_VERDICTS,
    ClaimComparison,
    ClaimResult,
    evaluate_claims,
    study_claims,
)
from lyaptune.analysis.collapse import (
    CollapseThresholds,
    LabelStats,
    classify_collapse,
    label_stats,
    num_classes_of,
    task_label_stats,
)
from lyaptune.analysis.compare import (
    DEFAULT_METRICS,
    METRIC_SENSE,
    best_on_search,
    compare,
    paired_comparisons,
    reference_choice,
    resolve_reference,
    run_device_seconds,
    status_verdict,
)
from lyaptune.analysis.crossstudy import (
    pairwise_improvement,
    performance_profile,
    probability_of_improvement,
    study_scores,
)
from lyaptune.analysis.figures import (
    budget_figure,
    collapsed_counts,
    curve_bands,
    divergence_figure,
    grid_response_figure,
    importance_figure,
    performance_profile_figure,
    save_figure,
    slices_figure,
    study_curves_figure,
    training_curves_figure,
)
from lyaptune.analysis.load import Study, load_study
from lyaptune.analysis.paper_figures import PaperFigure, constant_steps_figure, schedulers_figure
from lyaptune.analysis.report import REPORT_FORMATS, format_compare_tables, write_report
from lyaptune.analysis.sensitivity import (
    Sensitivity,
    divergence_vs_lr_khat,
    param_importance,
    sensitivity,
    study_k_hat,
)
from lyaptune.analysis.stats import (
    holm_adjust,
    mean_interval,
    paired_interval,
    paired_t_p,
    paired_test,
    signflip_p,
)

__all__ = [
    "best_on_search",
    "paired_comparisons",
    "paired_t_p",
    "signflip_p",
    "status_verdict",
    "CLAIM_VERDICTS",
    "ClaimComparison",
    "ClaimResult",
    "evaluate_claims",
    "study_claims",
    "CollapseThresholds",
    "LabelStats",
    "DEFAULT_METRICS",
    "FAILED_POLICIES",
    "METRIC_SENSE",
    "MatchingBudget",
    "PaperFigure",
    "REPORT_FORMATS",
    "Sensitivity",
    "Study",
    "budget_curve",
    "budget_figure",
    "classify_collapse",
    "collapsed_counts",
    "compare",
    "constant_steps_figure",
    "curve_bands",
    "divergence_figure",
    "divergence_vs_lr_khat",
    "expected_best",
    "format_compare_tables",
    "grid_response_figure",
    "holm_adjust",
    "label_stats",
    "mean_interval",
    "paired_interval",
    "pairwise_improvement",
    "performance_profile",
    "performance_profile_figure",
    "probability_of_improvement",
    "reference_choice",
    "run_device_seconds",
    "study_scores",
    "task_label_stats",
    "importance_figure",
    "load_study",
    "matching_budget",
    "matching_budgets",
    "num_classes_of",
    "paired_test",
    "param_importance",
    "resolve_reference",
    "save_figure",
    "schedulers_figure",  # not paper_figures: the function would shadow its submodule
    "search_trial_values",
    "sensitivity",
    "slices_figure",
    "study_curves_figure",
    "study_k_hat",
    "training_curves_figure",
    "write_report",
]
