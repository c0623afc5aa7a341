"""Django-free weak supervision: image measurements, labelling functions, label model, recipes.

Entry points: `features.extract_features`, `labelling_functions.lf_from_config`,
`label_model.fit_label_model` / `lf_summary`, `recipe.RecipeSpec` / `run_recipe`.
"""
