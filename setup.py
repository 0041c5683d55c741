"""The package list, which pyproject.toml cannot state: the sample tasks live in the top-level `sample_tasks/`,
where a teacher looks for them, and ship inside the package as `workbench/sample_tasks/` (pyproject.toml's
package-dir maps the folder). setuptools' `packages.find` cannot add a mapped folder to the packages it finds."""

from setuptools import find_namespace_packages, setup

sample_tasks = ["workbench." + name for name in find_namespace_packages(include=["sample_tasks*"])]
setup(packages=find_namespace_packages(include=["workbench*"]) + sample_tasks)
