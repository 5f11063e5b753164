"""The mutation report's reading of mutmut's output: which module a mutant is in, which line it
changed, and whether an explanation covers it."""

import mutants_report

DIFF = """--- vae_zoo/objectives.py
+++ vae_zoo/objectives.py
@@ -1,4 +1,4 @@
 def ciwae(out, context, s):
     log_w = out.log_importance_weights()
-    combined = s.beta * log_w.mean(0) + (1 - s.beta) * log_mean_exp(log_w, 0)
+    combined = s.beta * log_w.mean(0) + (1 - s.beta) * log_mean_exp(log_w, )
     return combined"""


def test_a_mutant_name_gives_its_module_for_functions_and_methods():
    assert mutants_report.module_of("vae_zoo.objectives.x_elbo__mutmut_3") == "vae_zoo.objectives"
    assert mutants_report.module_of(
        "vae_zoo.metrics.samples.x__batched__mutmut_3") == "vae_zoo.metrics.samples"
    assert mutants_report.module_of(
        "vae_zoo.priors.xǁVampPriorǁ__init____mutmut_1") == "vae_zoo.priors"


def test_a_diff_gives_the_file_and_the_changed_line_before_and_after_without_context():
    path, before, after = mutants_report.changed_lines(DIFF)
    assert path == "vae_zoo/objectives.py"
    assert before == "combined = s.beta * log_w.mean(0) + (1 - s.beta) * log_mean_exp(log_w, 0)"
    assert after == "combined = s.beta * log_w.mean(0) + (1 - s.beta) * log_mean_exp(log_w, )"


def test_a_survivor_is_explained_only_by_an_entry_for_its_file_and_both_lines():
    path, before, after = mutants_report.changed_lines(DIFF)
    assert "default dimension is 0" in mutants_report.explanation(path, before, after)
    assert mutants_report.explanation("vae_zoo/priors.py", before, after) is None
    assert mutants_report.explanation(path, before, after + " ") is None
