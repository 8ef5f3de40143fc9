"""The package's public names are listed three times for different readers (the TYPE_CHECKING
imports for type checkers, ``_PUBLIC`` for the lazy loader, ``__all__`` for ``import *`` and
re-export): this keeps the last two the same, and every name loadable. Pure: no Redis."""

from __future__ import annotations

import pytest

import frappe_celery

pytestmark = pytest.mark.unit  # pure: no Redis, no worker


def test_every_public_name_has_a_home_and_every_home_is_public():
    assert set(frappe_celery.__all__) == {*frappe_celery._PUBLIC, "app"}


@pytest.mark.parametrize("name", sorted(frappe_celery._PUBLIC))
def test_every_public_name_loads_from_the_module_it_names(name):
    assert getattr(frappe_celery, name) is not None
