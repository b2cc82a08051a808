"""Personal API tokens in the admin: listed (never their digest), created (the token is shown
once, in a message), revoked."""

from __future__ import annotations

from django.contrib import admin, messages

from eidolon_site.accounts import token_create, token_revoke
from eidolon_site.models import ApiToken
from reliability.display import time_column


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created", "last_used", "revoked"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    actions = ["revoke"]
    fields = ["user", "name", "prefix", "created", "last_used", "revoked"]
    created = time_column("created_at", "created")
    last_used = time_column("last_used_at", "last used", relative=True)
    revoked = time_column("revoked_at", "revoked")

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        # A token is created with a user and a name; afterwards it can only be revoked.
        return self.fields if obj else ["prefix", "created", "last_used", "revoked"]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Nothing of a token can be edited: a Close link instead of Save, revoking instead of
        # Delete (the list's action), so its use stays on record.
        read_only = {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
        }
        return super().change_view(
            request, object_id, form_url, extra_context={**read_only, **(extra_context or {})}
        )

    def get_fields(self, request, obj=None) -> list[str]:
        return self.fields if obj else ["user", "name"]

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        if change:
            return
        token, raw = token_create(user=obj.user, name=obj.name)
        obj.pk, obj.prefix, obj.digest = token.pk, token.prefix, token.digest
        obj.created_at = token.created_at
        obj._state.adding = False
        self.message_user(
            request,
            f"The token for {obj.user.get_username()} is {raw} — copy it now: it is not stored "
            "and will not be shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke (stops working at once)", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        actor = request.user.get_username()
        for token in queryset:
            token_revoke(token=token, actor=actor)
        self.message_user(request, f"{queryset.count()} token(s) revoked.", messages.SUCCESS)
