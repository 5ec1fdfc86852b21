// Draws the overview's charts from the data the page carries in data-series attributes (no
// inline script: the Content Security Policy allows scripts from this origin only).
(function () {
  if (typeof Chart === 'undefined') return;
  const colors = { success: '#1b7a3d', failure: '#b3261e', mix: ['#2457c5', '#1b7a3d', '#c77c02', '#7b3fb3', '#5b6475'] };
  for (const canvas of document.querySelectorAll('canvas[data-chart]')) {
    let series;
    try {
      series = JSON.parse(canvas.dataset.series || '{}');
    } catch {
      continue;
    }
    if (canvas.dataset.chart === 'stacked') {
      new Chart(canvas, {
        type: 'bar',
        data: {
          labels: series.labels,
          datasets: [
            { label: 'success', data: series.success, backgroundColor: colors.success },
            { label: 'failure', data: series.failure, backgroundColor: colors.failure },
          ],
        },
        options: { animation: false, responsive: true, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
      });
    } else if (canvas.dataset.chart === 'doughnut') {
      new Chart(canvas, {
        type: 'doughnut',
        data: { labels: series.labels, datasets: [{ data: series.values, backgroundColor: colors.mix }] },
        options: { animation: false, responsive: true, aspectRatio: 2 },
      });
    }
  }
})();
