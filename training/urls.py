from django.urls import path

from training import views

urlpatterns = [path("rounds/<int:pk>/report/", views.round_report, name="round-report")]
